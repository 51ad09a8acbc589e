"""Re-pricing a past period and the FOCUS export, against real chdb."""

from __future__ import annotations

import csv
import json
import re
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spendstream.agents.stages import process
from spendstream.batches import SourceRecord
from spendstream.focus import DATETIME_COLUMNS, export_focus
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


# FOCUS 1.3 column rules (FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, specification/datasets/cost_and_usage/columns/
# <column>.md and specification/attributes/<attribute>.md), as the tests below check them. Read at these commits:
# columns billingaccountid 009d5342, billingperiodstart 02645d23, chargeclass 0eccf797, chargeperiodend
# 364ab2ca, consumedquantity 02d35f86, contractedcost 07fd7f98, contractedunitprice 027dc699, effectivecost
# 01d1432a, listcost 04a40c5a, pricingquantity 01705c17, servicecategory 02645d23, tags 005e8b61; attributes
# datetime_format 0942b25c, key_value_format 0942b25c, numeric_format 04a7fe8d, unit_format 02ec33df,
# custom_column_handling 06c0e9f8.
SPEC_DECIMAL = {"BilledCost", "ContractedCost", "EffectiveCost", "ListCost", "ContractedUnitPrice", "ListUnitPrice",
                "PricingQuantity", "ConsumedQuantity"}  # "<Column> MUST be of type Decimal"
SPEC_DATETIME = {"BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd"}
# datetime_format.md: "extended ISO 8601 format with UTC offset ('YYYY-MM-DDTHH:mm:ssZ')"
DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
# numeric_format.md: integer or decimal; no exponent, "+" sign, commas, symbols or units
NUMERIC = re.compile(r"^-?\d+(\.\d+)?$")
# servicecategory.md, chargecategory.md, chargefrequency.md, pricingcategory.md: allowed values
SERVICE_CATEGORIES = {"AI and Machine Learning", "Analytics", "Business Applications", "Compute", "Databases",
                      "Developer Tools", "Multicloud", "Identity", "Integration", "Internet of Things",
                      "Management and Governance", "Media", "Migration", "Mobile", "Networking", "Security",
                      "Storage", "Web", "Other"}
# unit_format.md: "<unit-quantity> <plural-units>" with a positive integer quantity, capitalised count units
UNIT = re.compile(r"^([1-9]\d* )?[A-Z][A-Za-z]*$")


def _focus_events(day: datetime) -> list[dict]:
    events = _events(day)
    events[0] |= {"tags": {"cost-center": "cc-42", "project": "search/v2", "path": "C:\\runs\\/7"},
                  "environment": "prod"}
    events[1] |= {"cached_input_tokens": 400_000, "output_tokens": 50_000, "reasoning_tokens": 20_000}
    events[2] |= {"provider": "anthropic", "model": "claude-3-5-sonnet-20241022", "cached_input_tokens": 300_000,
                  "cache_write_tokens": 200_000, "cache_write_1h_tokens": 50_000}
    return events


def _tags(text: str) -> dict:
    def unique(pairs: list) -> dict:
        keys = [k for k, _ in pairs]
        assert len(keys) == len(set(keys)), f"key_value_format.md: keys MUST be unique: {text}"
        return dict(pairs)

    return json.loads(text, object_pairs_hook=unique)


def _store_general_calculation_row(store, day: datetime) -> None:
    """One event as the pipeline stores a price the catalog's general calculation made (a per-request fee):
    a total and a list cost, no per-token unit prices. No provider spendstream prices has such a model in
    today's catalog, so the stored shape is made here from an event priced by rate card."""
    event = {"event_id": f"general-{uuid.uuid4().hex[:8]}", "ts": (day + timedelta(minutes=90)).isoformat(),
             "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1_000, "output_tokens": 500,
             "team": "search"}
    table = usage_table(process([SourceRecord("usage", 0, 0, orjson.dumps([event]))], Pricer()))
    for name in table.column_names:
        if name.endswith("_price_per_mtok"):
            table = table.set_column(table.schema.get_field_index(name), name,
                                     pa.nulls(table.num_rows, table.schema.field(name).type))
    store.insert_arrow("usage_events", table)


def test_focus_export_conforms_to_the_focus_1_3_column_rules(embedded_store, tmp_path) -> None:
    # a fixed day no other test writes to (tests write around their "now")
    day = datetime(2025, 12, 1, 0, tzinfo=timezone.utc)
    _store_events(embedded_store, day, _focus_events(day))
    _store_general_calculation_row(embedded_store, day)
    since, until = day, day + timedelta(hours=3)
    stored_total, _ = _totals(embedded_store, since, until)
    accounts = {"openai": "org-Abc123", "*": "acct-0001"}

    result = export_focus(embedded_store, since, until, tmp_path / "focus.csv", billing_accounts=accounts)
    with open(result.path, newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames or [], list(reader)
    parquet = pq.read_table(export_focus(embedded_store, since, until, tmp_path / "focus.parquet",
                                         billing_accounts=accounts).path)
    assert rows and parquet.num_rows == len(rows) and parquet.column_names == columns

    # names: every Mandatory column; custom columns carry the x_ prefix (custom_column_handling.md)
    assert SPEC_MANDATORY <= set(columns)
    assert {"ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice", "SkuId", "SkuMeter",
            "SkuPriceId", "Tags"} <= set(columns)
    for name in columns:
        assert re.fullmatch(r"(x_)?[A-Z][A-Za-z]+", name), name
    # types, in the typed (Parquet) file
    for name in SPEC_DECIMAL:
        assert pa.types.is_decimal(parquet.schema.field(name).type), (name, parquet.schema.field(name).type)
    for name in SPEC_DATETIME:
        assert parquet.schema.field(name).type == pa.timestamp("ms", tz="UTC"), name
    assert set(DATETIME_COLUMNS) == SPEC_DATETIME

    for row in rows:
        # nullability: Mandatory columns other than ChargeClass MUST NOT be null (each <column>.md);
        # ChargeClass MUST be null unless the charge corrects a closed billing period (chargeclass.md)
        assert all(row[c] != "" for c in SPEC_MANDATORY - NULLABLE), row
        assert row["ChargeClass"] == ""
        # consumedquantity.md, contractedunitprice.md, listunitprice.md, pricingquantity.md: a usage charge
        # (not a correction) with a SkuPriceId has all of these
        for name in ("ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice", "PricingQuantity",
                     "SkuPriceId"):
            assert row[name] != "", (name, row)
        # formats
        for name in SPEC_DATETIME:
            assert DATETIME.match(row[name]), (name, row[name])
        for name in SPEC_DECIMAL:
            assert NUMERIC.match(row[name]), (name, row[name])
        assert row["BillingCurrency"] == row["PricingCurrency"] == "USD"  # currency_format.md: ISO 4217
        assert row["ServiceCategory"] in SERVICE_CATEGORIES
        assert (row["ChargeCategory"], row["ChargeFrequency"], row["PricingCategory"]) == (
            "Usage", "Usage-Based", "Standard")
        assert UNIT.match(row["PricingUnit"]) and UNIT.match(row["ConsumedUnit"]), row
        # tags.md + key_value_format.md: a JSON object, unique keys, scalar values
        tags = _tags(row["Tags"])
        assert isinstance(tags, dict) and all(isinstance(v, (str, int, float, bool)) or v is None
                                              for v in tags.values())
        # billingperiodstart.md / chargeperiodend.md: inclusive start, exclusive end; the charge in its period
        assert row["BillingPeriodStart"] <= row["ChargePeriodStart"] < row["ChargePeriodEnd"] <= row[
            "BillingPeriodEnd"]

        # cost identities
        billed, contracted, effective, listed = (Decimal(row[c]) for c in (
            "BilledCost", "ContractedCost", "EffectiveCost", "ListCost"))
        quantity = Decimal(row["PricingQuantity"])
        # contractedcost.md / listcost.md / pricingquantity.md: cost = unit price × PricingQuantity
        assert contracted == Decimal(row["ContractedUnitPrice"]) * quantity, row
        assert listed == Decimal(row["ListUnitPrice"]) * quantity, row
        # effectivecost.md: EffectiveCost matches BilledCost when no commitment covers the charge
        assert effective == billed
        if row["x_PriceSource"].startswith("catalog"):
            # contractedcost.md / contractedunitprice.md: equal to the list figures when no negotiated terms apply
            assert contracted == listed and row["ContractedUnitPrice"] == row["ListUnitPrice"], row

    # the values this data implies
    assert sum(Decimal(r["EffectiveCost"]) for r in rows) == stored_total == result.effective_cost
    assert {r["ChargePeriodStart"] for r in rows} == {"2025-12-01T00:00:00Z", "2025-12-01T01:00:00Z"}
    assert {(r["BillingPeriodStart"], r["BillingPeriodEnd"]) for r in rows} == {
        ("2025-12-01T00:00:00Z", "2026-01-01T00:00:00Z")}
    by_provider = {r["ServiceProviderName"]: r["BillingAccountId"] for r in rows}
    assert by_provider == {"OpenAI": "org-Abc123", "Anthropic": "acct-0001"}
    assert result.unassigned_providers == ()
    tagged = [_tags(r["Tags"]) for r in rows if r["x_Environment"] == "prod"]
    assert tagged and all(t == {"cost-center": "cc-42", "project": "search/v2", "path": "C:\\runs\\/7",
                                "spendstream/team": "search",
                                "spendstream/customer": "acme", "spendstream/environment": "prod"} for t in tagged)
    assert '"search/v2"' in (tmp_path / "focus.csv").read_text().replace('""', '"')  # no JSON-escaped slashes
    # consumedquantity.md: the input meter does not count the tokens its cache-read/write meters count
    cached = [r for r in rows if r["x_Customer"] == "globex"]
    assert {r["SkuMeter"]: r["ConsumedQuantity"] for r in cached if r["SkuMeter"].endswith("input")} == {
        "input": "600000", "cached input": "400000"}
    general = [r for r in rows if r["SkuMeter"] == "usage"]
    assert [(r["x_Model"], r["PricingQuantity"].rstrip("0").rstrip("."), r["PricingUnit"], r["ConsumedQuantity"])
            for r in general] == [("gpt-4o-mini", "1", "Units", "1500")]
    assert Decimal(general[0]["ContractedUnitPrice"]) == Decimal(general[0]["EffectiveCost"]) > 0

    unassigned = export_focus(embedded_store, since, until, tmp_path / "default.csv")
    assert unassigned.unassigned_providers == ("anthropic", "openai")
    with open(unassigned.path, newline="") as f:
        assert {r["BillingAccountId"] for r in csv.DictReader(f)} == {"unassigned:openai", "unassigned:anthropic"}


def test_focus_export_of_an_empty_period_writes_the_columns_and_no_rows(embedded_store, tmp_path) -> None:
    day = datetime(2024, 2, 3, tzinfo=timezone.utc)
    result = export_focus(embedded_store, day, day + timedelta(hours=1), tmp_path / "empty.csv")
    assert (result.rows, result.effective_cost, result.unassigned_providers) == (0, Decimal(0), ())
    with open(result.path, newline="") as f:
        reader = csv.DictReader(f)
        assert SPEC_MANDATORY <= set(reader.fieldnames or []) and list(reader) == []
