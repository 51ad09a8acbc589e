"""FOCUS 1.3 export: stored usage as FinOps Open Cost and Usage Specification rows.

One row per hour × provider × model × mode/tier × team/feature/customer/environment
× SKU meter: the token types (input, cached input, cache write, 1-hour cache write,
output, reasoning, in 1M tokens) and the fees (web search, web fetch, file search,
code execution, request, in calls). ``ListCost`` is what the catalog's list price charges,
``EffectiveCost`` what applies after negotiated overrides. Costs per meter are
tokens × unit price, exact in ClickHouse ``Decimal``; they add up to the stored
``total_cost``. Events priced by the catalog's general calculation (a per-request
fee) have no per-token unit prices and appear as one ``usage`` meter.

Unpriced events have no cost to report: they are left out and counted, so the
caller can say so (FOCUS cost columns must not be null).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from spendstream.pricing.fees import BILLED_STATUSES, CALL_FIELDS, FEE_KINDS
from spendstream.sinks.ranges import between
from spendstream.sinks.rollups import MINUTES
from spendstream.sinks.store import Store, sql_time

# The columns FOCUS 1.3 makes Mandatory in a Cost and Usage dataset
# (FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, specification/datasets/cost_and_usage/columns).
FOCUS_MANDATORY = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency", "BillingPeriodEnd",
    "BillingPeriodStart", "ChargeCategory", "ChargeClass", "ChargeDescription", "ChargePeriodEnd",
    "ChargePeriodStart", "ContractedCost", "EffectiveCost", "HostProviderName", "InvoiceIssuerName", "ListCost",
    "PricingQuantity", "PricingUnit", "ServiceCategory", "ServiceName", "ServiceProviderName",
)
# Conditional and recommended columns that apply to metered token usage.
FOCUS_CONDITIONAL = (
    "ChargeFrequency", "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice",
    "PricingCategory", "PricingCurrency", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceId",
)
EXTENSION_COLUMNS = ("x_Team", "x_Feature", "x_Customer", "x_Environment", "x_Model", "x_Mode", "x_ServiceTier",
                     "x_PriceSource")

HOUR = timedelta(hours=1)
MILLION = Decimal(1_000_000)

# Catalog provider id → (service provider, host provider, service name).
PROVIDERS = {
    "openai": ("OpenAI", "OpenAI", "OpenAI API"),
    "anthropic": ("Anthropic", "Anthropic", "Anthropic API"),
    "google": ("Google", "Google Cloud", "Gemini API"),
    "azure": ("Microsoft", "Microsoft Azure", "Azure OpenAI"),
    "aws": ("Amazon Web Services", "Amazon Web Services", "Amazon Bedrock"),
    "mistral": ("Mistral AI", "Mistral AI", "Mistral API"),
    "groq": ("Groq", "Groq", "GroqCloud"),
    "deepseek": ("DeepSeek", "DeepSeek", "DeepSeek API"),
    "openrouter": ("OpenRouter", "OpenRouter", "OpenRouter"),
}

_NO_PRICE = "CAST(NULL AS Nullable(Decimal(38, 18)))"


def _meter(name: str, tokens: str, kind: str) -> str:
    """One token-type meter of a row: (name, tokens, unit price, list unit price, cost, list cost)."""
    price, listed = f"{kind}_price_per_mtok", f"list_{kind}_price_per_mtok"
    quantity = f"toUInt64(if({price} IS NULL, 0, {tokens}))"
    return (f"('{name}', {quantity}, {price}, {listed}, "
            f"toNullable(toDecimal128({quantity} * {price} / 1000000, 18)), "
            f"toNullable(toDecimal128({quantity} * {listed} / 1000000, 18)))")


def _fee_meter(name: str, quantity: str, kind: str) -> str:
    """One fee meter of a row (tool calls, requests): the fee is per call, so cost = calls × fee.

    A kind no price charges (a fee of 0, as most models' request fee) is no meter.
    """
    price, listed = f"{kind}_price_per_call", f"list_{kind}_price_per_call"
    quantity = f"toUInt64(if(ifNull({price}, 0) = 0 AND ifNull({listed}, 0) = 0, 0, {quantity}))"
    return (f"('{name}', {quantity}, {price}, {listed}, toNullable(toDecimal128({quantity} * {price}, 18)), "
            f"toNullable(toDecimal128({quantity} * {listed}, 18)))")


# The quantity of each fee kind in a row; a request is charged only when answered (pricing/fees.py).
_FEE_QUANTITIES = {kind: CALL_FIELDS[kind] if kind in CALL_FIELDS else
                   "if(status IN (" + ", ".join(f"'{s}'" for s in BILLED_STATUSES) + "), 1, 0)"
                   for kind in FEE_KINDS}
FEE_METERS = {kind: kind.replace("_", " ") for kind in FEE_KINDS}
_LIST_FEES = " + ".join(f"{q} * ifNull(list_{kind}_price_per_call, 0)" for kind, q in _FEE_QUANTITIES.items())

# Rows the catalog prices by its general calculation have no per-token unit
# prices: their token cost is one "usage" meter (their fees are meters of their own).
_METERS = "[" + ", ".join([
    _meter("input", "input_tokens - cached_input_tokens - cache_write_tokens", "input"),
    _meter("cached input", "cached_input_tokens", "cached_input"),
    _meter("cache write", "cache_write_tokens - cache_write_1h_tokens", "cache_write"),
    _meter("cache write 1h", "cache_write_1h_tokens", "cache_write_1h"),
    _meter("output", "output_tokens - reasoning_tokens", "output"),
    _meter("reasoning", "reasoning_tokens", "reasoning"),
    f"('usage', toUInt64(if(input_price_per_mtok IS NULL, input_tokens + output_tokens, 0)), "
    f"{_NO_PRICE}, {_NO_PRICE}, toNullable(toDecimal128(total_cost - ifNull(fee_cost, 0), 18)), "
    f"toNullable(toDecimal128(list_cost - ({_LIST_FEES}), 18)))",
    *(_fee_meter(FEE_METERS[kind], quantity, kind) for kind, quantity in _FEE_QUANTITIES.items()),
]) + "]"

QUERY = f"""
SELECT
    toDateTime64(toStartOfHour(ts), 3, 'UTC') AS period_start,
    ifNull(price_provider_id, provider) AS provider_id,
    ifNull(price_model_id, model) AS model_id,
    mode, ifNull(service_tier, '') AS tier, price_source,
    team, feature, customer, environment,
    tupleElement(m, 1) AS meter,
    sum(tupleElement(m, 2)) AS tokens,
    tupleElement(m, 3) AS unit_price,
    tupleElement(m, 4) AS list_unit_price,
    toDecimal128(sum(tupleElement(m, 5)), 18) AS meter_effective_cost,
    toDecimal128(sum(tupleElement(m, 6)), 18) AS meter_list_cost
FROM usage_events FINAL
ARRAY JOIN {_METERS} AS m
WHERE priced AND ts >= {{since:DateTime64(3, 'UTC')}} AND ts < {{until:DateTime64(3, 'UTC')}}
  AND tupleElement(m, 2) > 0
GROUP BY period_start, provider_id, model_id, mode, tier, price_source, team, feature, customer, environment,
         meter, unit_price, list_unit_price
ORDER BY period_start, provider_id, model_id, team, feature, customer, meter
"""


@dataclass(frozen=True, slots=True)
class FocusExport:
    rows: int
    unpriced_left_out: int
    effective_cost: Decimal
    path: Path


def focus_table(store: Store, since: datetime, until: datetime) -> tuple[pa.Table, int]:
    """FOCUS rows for ``since <= ts < until``, and how many unpriced events were left out."""
    params = {"since": sql_time(since), "until": sql_time(until)}
    usage = store.query_arrow(QUERY, params)
    return _focus_columns(usage), unpriced_events(store, params)


def unpriced_events(store: Store, params: dict[str, str]) -> int:
    """How many events of ``since <= ts < until`` have no price (left out of the export).

    A count ``usage_minutes`` holds; the meter rows above need what no rollup keeps
    (the price's provider, model, source and unit prices), so they are read from raw.
    """
    rows = between(MINUTES, "0", ["unpriced_attempts"], since="{since:DateTime64(3, 'UTC')}",
                   until="{until:DateTime64(3, 'UTC')}")
    return int(store.query(f"SELECT sum(unpriced_attempts) FROM {rows}", params).scalar())


def export_focus(store: Store, since: datetime, until: datetime, out: Path) -> FocusExport:
    """Write the FOCUS rows to ``out``: Parquet if it ends in .parquet, else CSV."""
    table, unpriced = focus_table(store, since, until)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pq.write_table(table, out)
    else:
        pa_csv.write_csv(table, out)
    total = sum(table["EffectiveCost"].to_pylist(), Decimal(0))
    return FocusExport(table.num_rows, unpriced, total, out)


def _focus_columns(usage: pa.Table) -> pa.Table:
    rows = usage.to_pylist()
    money = pa.decimal128(38, 18)
    ts = pa.timestamp("ms", tz="UTC")
    out: dict[str, list[object]] = {name: [] for name in FOCUS_MANDATORY + FOCUS_CONDITIONAL + EXTENSION_COLUMNS}
    for r in rows:
        service_provider, host, service = PROVIDERS.get(r["provider_id"], (r["provider_id"],) * 3)
        start = r["period_start"]
        month_start = start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        month_end = (month_start.replace(year=month_start.year + 1, month=1) if month_start.month == 12
                     else month_start.replace(month=month_start.month + 1))
        meter = r["meter"]
        per_call = meter in FEE_METERS.values()
        sku = f"{r['provider_id']}/{r['model_id']}"
        values = {
            "BilledCost": r["meter_effective_cost"], "BillingAccountId": r["provider_id"],
            "BillingAccountName": service_provider, "BillingCurrency": "USD",
            "BillingPeriodStart": month_start, "BillingPeriodEnd": month_end,
            "ChargeCategory": "Usage", "ChargeClass": None,
            "ChargeDescription": f"{r['model_id']} {meter} {'calls' if per_call else 'tokens'}",
            "ChargePeriodStart": start, "ChargePeriodEnd": start + HOUR,
            "ContractedCost": r["meter_effective_cost"], "EffectiveCost": r["meter_effective_cost"],
            "HostProviderName": host, "InvoiceIssuerName": service_provider, "ListCost": r["meter_list_cost"],
            "PricingQuantity": Decimal(r["tokens"]) if per_call else Decimal(r["tokens"]) / MILLION,
            "PricingUnit": "Calls" if per_call else "1M Tokens", "ServiceCategory": "AI and Machine Learning",
            "ServiceName": service,
            "ServiceProviderName": service_provider,
            "ChargeFrequency": "Usage-Based", "ConsumedQuantity": r["tokens"],
            "ConsumedUnit": "Calls" if per_call else "Tokens",
            "ContractedUnitPrice": r["unit_price"], "ListUnitPrice": r["list_unit_price"],
            "PricingCategory": "Standard", "PricingCurrency": "USD", "ServiceSubcategory": "Generative AI",
            "SkuId": sku, "SkuMeter": meter, "SkuPriceId": f"{sku}/{meter}/{r['price_source']}",
            "x_Team": r["team"], "x_Feature": r["feature"], "x_Customer": r["customer"],
            "x_Environment": r["environment"], "x_Model": r["model_id"], "x_Mode": r["mode"],
            "x_ServiceTier": r["tier"] or None, "x_PriceSource": r["price_source"],
        }
        for name, value in values.items():
            out[name].append(value)
    types = {"BilledCost": money, "ContractedCost": money, "EffectiveCost": money, "ListCost": money,
             "ContractedUnitPrice": money, "ListUnitPrice": money, "PricingQuantity": money,
             "ConsumedQuantity": pa.uint64(), "BillingPeriodStart": ts, "BillingPeriodEnd": ts,
             "ChargePeriodStart": ts, "ChargePeriodEnd": ts}
    return pa.table({name: pa.array(values, types.get(name, pa.string())) for name, values in out.items()})
