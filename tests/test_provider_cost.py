"""Provider-reported cost: stored exactly beside the computed one, billed by a recorded policy, and drift alerted.

Events flow through a real Emitter, tansu and the worker's stages into chdb; the
computed cost comes from an override whose price is written here, so every amount
below is worked out by hand.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from spendstream.agents.stages import process
from spendstream.alerting.delivery import store_new_alerts
from spendstream.detect.cost_drift import CostDriftDetector, ModelCosts, detect_cost_drift
from spendstream.pricing import Pricer
from spendstream.pricing.overrides import load_overrides
from spendstream.schemas import UsageEvent
from spendstream.sinks.writer import SinkWriter
from tests.test_one_shape import emitted

# $2 per million input tokens, $8 per million output: 1,000 in + 500 out = $0.002 + $0.004.
OVERRIDE = """
overrides:
  - id: drift-test
    provider: openrouter
    model: "drift-*"
    effective_from: 2026-01-01
    prices: {input: 2, output: 8}
"""
COMPUTED = Decimal("0.006")


@pytest.fixture(scope="module")
def pricer(tmp_path_factory: pytest.TempPathFactory) -> Pricer:
    path = tmp_path_factory.mktemp("overrides") / "overrides.yaml"
    path.write_text(OVERRIDE)
    return Pricer(load_overrides(path))


def _event(model: str, cost: str | None, ts: datetime, **fields: object) -> UsageEvent:
    return UsageEvent(provider="openrouter", model=model, ts=ts, input_tokens=1000, output_tokens=500,
                      provider_cost_usd=cost, provider_cost_source="openrouter:usage.cost" if cost else None,
                      **fields)


def _store(store, bootstrap: str, topic: str, pricer: Pricer, events: list[UsageEvent], *, policy: str) -> None:
    records = emitted(bootstrap, topic, events, expect=1)
    batch = process(records, pricer)
    assert batch.dead_letters == [], [d.reason for d in batch.dead_letters]
    asyncio.run(SinkWriter(store, billing_policy=policy).write(batch))


def _stored(store, model: str) -> dict[str | None, tuple]:
    rows = store.query(
        "SELECT provider_cost_usd, provider_cost_source, provider_cost, total_cost, billing_policy, billed_cost, "
        "billed_from FROM usage_events FINAL WHERE model = {m:String}", {"m": model}).rows
    return {row[0]: tuple(row[1:]) for row in rows}


@pytest.mark.integration
@pytest.mark.parametrize(("policy", "billed_reported", "billed_missing"), [
    ("computed", (COMPUTED, "computed"), (COMPUTED, "computed")),
    ("provider", (Decimal("0.0061234567890123"), "provider"), (None, None)),  # unknown: absent, never 0
    ("provider_when_present", (Decimal("0.0061234567890123"), "provider"), (COMPUTED, "computed")),
])
def test_the_provider_cost_is_stored_exactly_beside_the_computed_one_and_billed_by_the_policy(
        embedded_store, broker: str, topic: str, pricer: Pricer, policy: str, billed_reported: tuple,
        billed_missing: tuple) -> None:
    model = f"drift-{uuid.uuid4().hex[:8]}"
    now = datetime.now(timezone.utc)
    # 16 significant digits: more than a float keeps exactly once summed, all kept here
    events = [_event(model, "0.0061234567890123", now), _event(model, None, now)]
    _store(embedded_store, broker, topic, pricer, events, policy=policy)
    stored = _stored(embedded_store, model)
    source, provider_cost, total, stored_policy, *billed = stored["0.0061234567890123"]
    assert (source, provider_cost, total, stored_policy) == (
        "openrouter:usage.cost", Decimal("0.0061234567890123"), COMPUTED, policy)
    assert tuple(billed) == billed_reported
    source, provider_cost, total, stored_policy, *billed = stored[None]
    assert (source, provider_cost, total) == (None, None, COMPUTED)
    assert tuple(billed) == billed_missing


@pytest.mark.integration
def test_drift_beyond_the_tolerance_fires_one_incident_per_model_and_resolves_when_costs_agree(
        embedded_store, broker: str, topic: str, pricer: Pricer) -> None:
    run = uuid.uuid4().hex[:8]
    drifting, agreeing, close = f"drift-a-{run}", f"drift-b-{run}", f"drift-c-{run}"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    detector = CostDriftDetector(relative=0.05, absolute_usd=Decimal("0.001"))
    earlier = now - timedelta(minutes=10)
    _store(embedded_store, broker, topic, pricer, [
        # 3 calls each: computed $0.018; reported $0.021 (+$0.003, 14 %): drift
        *[_event(drifting, "0.007", earlier, event_id=f"{drifting}-{i}") for i in range(3)],
        *[_event(agreeing, "0.006", earlier, event_id=f"{agreeing}-{i}") for i in range(3)],
        # +$0.0003 in total: under the absolute tolerance, though 1.6 % apart
        *[_event(close, "0.0061", earlier, event_id=f"{close}-{i}") for i in range(3)],
    ], policy="computed")

    alerts = [a for a in detect_cost_drift(embedded_store, now, detector) if run in a.subject]
    assert [(a.subject, a.state, a.observed, a.expected) for a in alerts] == [
        (f"provider=openrouter model={drifting}", "firing", Decimal("0.021"), Decimal("0.018"))]
    assert "$0.003 more than computed ($0.018)" in alerts[0].message
    assert store_new_alerts(embedded_store, alerts) == 1
    # while it fires, the same drift raises no second incident
    later = now + timedelta(minutes=5)
    assert [a for a in detect_cost_drift(embedded_store, later, detector) if run in a.subject] == []

    # an hour on, the model's calls are billed as computed again: the incident resolves
    much_later = now + timedelta(hours=1, minutes=5)
    _store(embedded_store, broker, f"{topic}.2", pricer, [
        _event(drifting, "0.006", much_later - timedelta(minutes=1), event_id=f"{drifting}-ok")], policy="computed")
    resolved = [a for a in detect_cost_drift(embedded_store, much_later, detector) if run in a.subject]
    assert [(a.state, a.dedup_key) for a in resolved] == [("resolved", alerts[0].dedup_key)]


@pytest.mark.parametrize(("computed", "reported", "drifts"), [
    ("1.00", "1.02", False),   # 2 % apart: within 5 %
    ("1.00", "1.06", True),    # 6 %: beyond 5 % and beyond $0.01
    ("0.10", "0.109", False),  # 9 % but only $0.009
    ("0.00", "0.02", True),    # the catalog says free, the provider bills
])
def test_drift_needs_both_the_relative_and_the_absolute_tolerance_exceeded(
        computed: str, reported: str, drifts: bool) -> None:
    costs = ModelCosts("p", "m", 1, Decimal(computed), Decimal(reported))
    assert CostDriftDetector(relative=0.05, absolute_usd=Decimal("0.01")).drifts(costs) is drifts


def test_the_billing_policy_is_a_validated_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    from spendstream.settings import Settings

    assert Settings().billing_policy == "computed"
    monkeypatch.setenv("SPENDSTREAM_BILLING_POLICY", "provider_when_present")
    assert Settings().billing_policy == "provider_when_present"
    monkeypatch.setenv("SPENDSTREAM_BILLING_POLICY", "cheapest")
    with pytest.raises(ValidationError, match="billing_policy"):
        Settings()


def test_a_block_with_a_cost_that_is_not_exact_decimal_text_leaves_the_fast_path_and_is_dead_lettered_alone(
        pricer: Pricer) -> None:
    """The pattern travels into the block decoder (schemas/shape.py): msgspec refuses what pydantic refuses."""
    from spendstream.agents.events import NotFast, block_columns
    from spendstream.agents.stages import EARLIEST_TS
    from spendstream.batches import SourceRecord
    from spendstream.emitter.encoding import encode_block

    now = datetime.now(timezone.utc)
    good, bad = _event("drift-x", "0.25", now), _event("drift-x", "0.5", now)
    block = orjson.loads(encode_block([good, bad]))
    block["provider_cost_usd"][1] = "5e-1"  # as a float would have been written
    value = orjson.dumps(block)
    with pytest.raises(NotFast):
        block_columns(value, earliest=EARLIEST_TS, latest=now + timedelta(days=1))
    batch = process([SourceRecord("usage", 0, 0, value)], pricer)
    assert [e.provider_cost_usd for e in map(batch.event, range(batch.num_events))] == ["0.25"]
    [dead] = batch.dead_letters
    assert dead.event_id == bad.event_id and "provider_cost_usd: String should match pattern" in dead.reason
