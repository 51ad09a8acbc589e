"""Re-pricing a past period and the FOCUS export, against real chdb."""

from __future__ import annotations

import csv
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pyarrow.parquet as pq
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.focus import export_focus
from spendstream.pricing import Pricer, load_overrides
from spendstream.reprice import reprice
from spendstream.sinks.rows import usage_table

pytestmark = pytest.mark.integration

# FOCUS 1.3, Cost and Usage dataset: the columns whose feature level is Mandatory
# (FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, specification/datasets/cost_and_usage/columns/*.md).
SPEC_MANDATORY = {
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "HostProviderName", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ServiceCategory", "ServiceName", "ServiceProviderName",
}
NULLABLE = {"ChargeClass"}


def _store_events(store, day: datetime, events: list[dict]) -> None:
    batch = process([SourceRecord("usage", 0, 0, orjson.dumps(events))], Pricer())
    store.insert_arrow("usage_events", usage_table(batch))


def _events(day: datetime) -> list[dict]:
    run = uuid.uuid4().hex[:8]
    base = {"provider": "openai", "model": "gpt-4o", "input_tokens": 1_000_000, "output_tokens": 100_000}
    customers = ["acme", "globex", "acme", "initech"]
    events = [{**base, "event_id": f"{run}-{i}", "ts": (day + timedelta(minutes=17 * i)).isoformat(),
               "customer": c, "team": "search"} for i, c in enumerate(customers)]
    events.append({"event_id": f"{run}-llama", "ts": day.isoformat(), "provider": "self-hosted",
                   "model": "acme-llama", "input_tokens": 1_000_000, "output_tokens": 1_000_000})
    return events


def _totals(store, since: datetime, until: datetime) -> tuple[Decimal, int]:
    row = store.query("SELECT sum(total_cost), countIf(priced) FROM usage_events FINAL "
                      "WHERE ts >= {a:DateTime64(3, 'UTC')} AND ts < {b:DateTime64(3, 'UTC')}",
                      {"a": since.strftime("%Y-%m-%d %H:%M:%S"), "b": until.strftime("%Y-%m-%d %H:%M:%S")}).rows[0]
    return row[0], row[1]


def test_reprice_applies_a_new_override_visibly_and_idempotently(embedded_store, tmp_path) -> None:
    day = datetime(2025, 3, 10, tzinfo=timezone.utc)
    since, until = day, day + timedelta(days=1)
    _store_events(embedded_store, day, _events(day))
    # gpt-4o: 1M in × $2.50 + 100k out × $10 = $3.50 each; the llama event is unpriced
    assert _totals(embedded_store, since, until) == (Decimal("14.0"), 4)

    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("overrides:\n"
                         "  - {id: acme-20, provider: openai, model: gpt-4o, customer: acme, "
                         "effective_from: 2025-03-01, discount_percent: 20}\n"
                         "  - {id: llama, provider: self-hosted, model: acme-llama, effective_from: 2025-01-01, "
                         "prices: {input: 0.2, output: 0.6}}\n")
    pricer = Pricer(load_overrides(overrides))

    dry = reprice(embedded_store, pricer, since, until, dry_run=True)
    assert (dry.examined, dry.changed) == (5, 3)
    assert _totals(embedded_store, since, until) == (Decimal("14.0"), 4)  # nothing written

    summary = reprice(embedded_store, pricer, since, until)
    # acme: 2 × $3.50 × 0.8 = $5.60; others 2 × $3.50; llama $0.20 + $0.60
    assert (summary.examined, summary.changed) == (5, 3)
    assert (summary.old_total, summary.new_total) == (Decimal("14.0"), Decimal("13.4"))
    assert _totals(embedded_store, since, until) == (Decimal("13.4"), 5)

    corrections = embedded_store.query(
        "SELECT old_total_cost, new_total_cost, new_price_source FROM cost_corrections "
        "WHERE reprice_id = {r:String} ORDER BY new_price_source, old_total_cost", {"r": summary.reprice_id}).rows
    assert corrections == [[Decimal("3.5"), Decimal("2.8"), "override:acme-20"]] * 2 + [
        [None, Decimal("0.8"), "override:llama"]]
    listed = embedded_store.query("SELECT sum(list_cost) FROM usage_events FINAL WHERE customer = 'acme' "
                                  "AND ts >= '2025-03-10' AND ts < '2025-03-11'").scalar()
    assert listed == Decimal("7.0")  # the list price stays beside the negotiated one

    again = reprice(embedded_store, pricer, since, until)
    assert (again.examined, again.changed, again.delta) == (5, 0, Decimal(0))


def test_focus_export_has_the_spec_columns_and_adds_up(embedded_store, tmp_path) -> None:
    day = datetime(2025, 4, 2, 9, tzinfo=timezone.utc)
    events = _events(day)
    events[1] |= {"cached_input_tokens": 400_000, "output_tokens": 50_000, "reasoning_tokens": 20_000}
    events[2] |= {"provider": "anthropic", "model": "claude-3-5-sonnet-20241022", "cached_input_tokens": 300_000,
                  "cache_write_tokens": 200_000, "cache_write_1h_tokens": 50_000}
    _store_events(embedded_store, day, events)
    since, until = day, day + timedelta(hours=3)
    stored_total, priced = _totals(embedded_store, since, until)

    result = export_focus(embedded_store, since, until, tmp_path / "focus.csv")
    assert result.unpriced_left_out == 1
    with open(result.path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert SPEC_MANDATORY <= set(rows[0])
    assert {"x_Team", "x_Feature", "x_Customer", "x_Environment", "SkuMeter", "ConsumedQuantity"} <= set(rows[0])
    for row in rows:
        assert all(row[c] != "" for c in SPEC_MANDATORY - NULLABLE), row
    assert sum(Decimal(r["EffectiveCost"]) for r in rows) == stored_total == result.effective_cost
    assert sum(Decimal(r["BilledCost"]) for r in rows) == stored_total
    meters = {r["SkuMeter"] for r in rows}
    assert meters == {"input", "cached input", "cache write", "cache write 1h", "output", "reasoning"}
    assert {r["ConsumedUnit"] for r in rows} == {"Tokens"}
    reasoning = [r for r in rows if r["SkuMeter"] == "reasoning"]
    assert [int(r["ConsumedQuantity"]) for r in reasoning] == [20_000]
    one_hour = [r for r in rows if r["SkuMeter"] == "cache write 1h"][0]
    # claude-3-5-sonnet 1-hour cache write: $6 per million
    assert (Decimal(one_hour["ListUnitPrice"]), Decimal(one_hour["EffectiveCost"])) == (Decimal(6), Decimal("0.3"))
    assert {r["ServiceProviderName"] for r in rows} == {"OpenAI", "Anthropic"}

    parquet = export_focus(embedded_store, since, until, tmp_path / "focus.parquet")
    table = pq.read_table(parquet.path)
    assert table.num_rows == len(rows) and SPEC_MANDATORY <= set(table.column_names)
    assert sum(table["EffectiveCost"].to_pylist()) == stored_total
