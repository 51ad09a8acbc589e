"""FOCUS 1.3 export: stored usage as FinOps Open Cost and Usage Specification rows.

One row per hour × provider × model × mode/tier × attribution and free tags
× SKU meter: the token types (input, cached input, cache write, 1-hour cache write,
output, reasoning, in ``1000000 Tokens``) and the fees (web search, web fetch, file
search, code execution, request, in ``Calls``). ``ListCost`` is what the catalog's
list price charges, ``ContractedCost`` and ``EffectiveCost`` what applies after
negotiated overrides (spendstream knows no commitment discounts, so the two are
equal, and equal to ``BilledCost``). Costs per meter are quantity × unit price,
exact in ClickHouse ``Decimal``; they add up to the stored ``total_cost``, and each
cost is its unit price times ``PricingQuantity``. Events priced by the catalog's
general calculation (a per-request fee) have no per-token unit prices and appear as
one ``usage`` meter with null unit prices.

``Tags`` is a JSON object: the event's free tags under their own keys, and the
attribution (team, feature, customer, environment) under ``spendstream/<name>``
(FOCUS: a second user-defined tag scheme carries a prefix). ``BillingAccountId``
is the account the provider bills, from ``billing_accounts`` (provider id →
account id, ``SPENDSTREAM_FOCUS_BILLING_ACCOUNTS``); a provider with none
configured gets ``unassigned:<provider>`` and is named in
:attr:`FocusExport.unassigned_providers`.

The rows are built column by column (pyarrow), never row by row. Parquet keeps
typed columns (``timestamp[ms, UTC]``, ``decimal128``); CSV writes date/times as
FOCUS's ``YYYY-MM-DDTHH:mm:ssZ`` and decimals as plain decimal text (never ``6E-7``).

Unpriced events have no cost to report: they are left out and counted, so the
caller can say so (FOCUS cost columns must not be null).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
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
    "PricingCategory", "PricingCurrency", "ServiceSubcategory", "SkuId", "SkuMeter", "SkuPriceId", "Tags",
)
EXTENSION_COLUMNS = ("x_Team", "x_Feature", "x_Customer", "x_Environment", "x_Model", "x_Mode", "x_ServiceTier",
                     "x_PriceSource")
DATETIME_COLUMNS = ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart", "ChargePeriodEnd")
# FOCUS DateTimeFormat: extended ISO 8601 in UTC, 'YYYY-MM-DDTHH:mm:ssZ'.
FOCUS_DATETIME = "%Y-%m-%dT%H:%M:%SZ"
TAG_PREFIX = "spendstream/"
UNASSIGNED = "unassigned:"

MONEY = pa.decimal128(38, 18)
TOKENS = pa.decimal128(38, 0)

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
    "x-ai": ("xAI", "xAI", "xAI API"),
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

# The event's free tags, then its attribution under the prefixed scheme; empty attribution is left out.
# toJSONString writes every "/" as the escape \/, which JSON allows but does not need: each \/ is turned back
# into "/" (a backslash of the value is itself escaped, \\, so no \/ belongs to one). Done here rather than by
# a SETTINGS clause, which a read-only session refuses.
_TAGS = (f"replaceAll(toJSONString(mapUpdate(tags, mapFilter((k, v) -> v != '', map("
         f"'{TAG_PREFIX}team', ifNull(team, ''), '{TAG_PREFIX}feature', ifNull(feature, ''), "
         f"'{TAG_PREFIX}customer', ifNull(customer, ''), '{TAG_PREFIX}environment', ifNull(environment, ''))))), "
         "'\\\\/', '/')")

QUERY = f"""
SELECT
    toDateTime64(toStartOfHour(ts), 3, 'UTC') AS period_start,
    period_start + INTERVAL 1 HOUR AS period_end,
    toDateTime64(toStartOfMonth(ts), 3, 'UTC') AS month_start,
    month_start + INTERVAL 1 MONTH AS month_end,
    ifNull(price_provider_id, provider) AS provider_id,
    ifNull(price_model_id, model) AS model_id,
    mode, nullIf(ifNull(service_tier, ''), '') AS tier, price_source,
    team, feature, customer, environment, {_TAGS} AS tags_json,
    tupleElement(m, 1) AS meter,
    toDecimal128(sum(tupleElement(m, 2)), 0) AS tokens,
    toDecimal128(sum(tupleElement(m, 2)), 18) / 1000000 AS pricing_quantity,
    tupleElement(m, 3) AS unit_price,
    tupleElement(m, 4) AS list_unit_price,
    toDecimal128(sum(tupleElement(m, 5)), 18) AS meter_effective_cost,
    toDecimal128(sum(tupleElement(m, 6)), 18) AS meter_list_cost
FROM usage_events FINAL
ARRAY JOIN {_METERS} AS m
WHERE priced AND ts >= {{since:DateTime64(3, 'UTC')}} AND ts < {{until:DateTime64(3, 'UTC')}}
  AND tupleElement(m, 2) > 0
GROUP BY period_start, month_start, provider_id, model_id, mode, tier, price_source, team, feature, customer,
         environment, tags_json, meter, unit_price, list_unit_price
ORDER BY period_start, provider_id, model_id, team, feature, customer, tags_json, meter
"""


@dataclass(frozen=True, slots=True)
class FocusExport:
    rows: int
    unpriced_left_out: int
    effective_cost: Decimal
    path: Path
    unassigned_providers: tuple[str, ...] = ()


def focus_table(store: Store, since: datetime, until: datetime, *,
                billing_accounts: Mapping[str, str] | None = None) -> tuple[pa.Table, int]:
    """FOCUS rows for ``since <= ts < until``, and how many unpriced events were left out."""
    params = {"since": sql_time(since), "until": sql_time(until)}
    usage = store.query_arrow(QUERY, params)
    return focus_columns(usage, billing_accounts or {}), unpriced_events(store, params)


def unpriced_events(store: Store, params: dict[str, str]) -> int:
    """How many events of ``since <= ts < until`` have no price (left out of the export).

    A count ``usage_minutes`` holds; the meter rows above need what no rollup keeps
    (the price's provider, model, source and unit prices), so they are read from raw.
    """
    rows = between(MINUTES, "0", ["unpriced_attempts"], since="{since:DateTime64(3, 'UTC')}",
                   until="{until:DateTime64(3, 'UTC')}")
    return int(store.query(f"SELECT sum(unpriced_attempts) FROM {rows}", params).scalar())


def export_focus(store: Store, since: datetime, until: datetime, out: Path, *,
                 billing_accounts: Mapping[str, str] | None = None) -> FocusExport:
    """Write the FOCUS rows to ``out``: Parquet if it ends in .parquet, else CSV (FOCUS date/time strings)."""
    accounts = billing_accounts or {}
    table, unpriced = focus_table(store, since, until, billing_accounts=accounts)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        pq.write_table(table, out)
    else:
        pa_csv.write_csv(focus_text_numbers(focus_text_dates(table)), out)
    total = pc.sum(table["EffectiveCost"]).as_py() if table.num_rows else Decimal(0)
    providers = pc.unique(table["BillingAccountId"]).to_pylist() if table.num_rows else []
    unassigned = tuple(sorted(p.removeprefix(UNASSIGNED) for p in providers if p.startswith(UNASSIGNED)))
    return FocusExport(table.num_rows, unpriced, Decimal(total), out, unassigned)


def focus_text_dates(table: pa.Table) -> pa.Table:
    """``table`` with its date/time columns as FOCUS DateTimeFormat strings (for text formats such as CSV)."""
    for name in DATETIME_COLUMNS:
        index = table.schema.get_field_index(name)
        # A column holds a few hundred distinct hours at most, and formatting a zoned timestamp costs
        # microseconds: each distinct one is formatted once. Whole seconds first: pyarrow's %S of a
        # millisecond timestamp carries the fraction.
        encoded = table[name].combine_chunks().dictionary_encode()
        seconds = pc.cast(encoded.dictionary, pa.timestamp("s", tz="UTC"))
        text = pc.strftime(seconds, format=FOCUS_DATETIME).take(encoded.indices)
        table = table.set_column(index, name, text)
    return table


def focus_text_numbers(table: pa.Table) -> pa.Table:
    """``table`` with its decimal columns as plain decimal text (for text formats such as CSV).

    Arrow writes a decimal below 10⁻⁶ in scientific notation (``6.00000000000E-7``), which
    FOCUS's numeric format does not allow; such values are rare (a fraction of a cent on one
    meter), so only they are rewritten, one by one.
    """
    for index, field in enumerate(table.schema):
        if not pa.types.is_decimal(field.type):
            continue
        text = pc.cast(table[field.name].combine_chunks(), pa.string())
        scientific = pc.fill_null(pc.match_substring(text, "E"), False)
        if pc.any(scientific).as_py():
            plain = [format(Decimal(v), "f") for v in pc.filter(text, scientific).to_pylist()]
            text = pc.replace_with_mask(text, scientific, pa.array(plain, pa.string()))
        table = table.set_column(index, field.name, text)
    return table


def focus_columns(usage: pa.Table, billing_accounts: Mapping[str, str]) -> pa.Table:
    """The FOCUS table for the meter rows of :data:`QUERY`, built column by column."""
    n = usage.num_rows
    provider = usage["provider_id"].combine_chunks().cast(pa.string())
    names = sorted(PROVIDERS.keys() | set(pc.unique(provider).to_pylist()))

    def by_provider(pick) -> pa.Array:
        """One value per catalog provider id, gathered for every row (unknown ids stand for themselves)."""
        values = pa.array([pick(name) for name in names], pa.string())
        return values.take(pc.index_in(provider, value_set=pa.array(names, pa.string())))

    def const(value: str) -> pa.Array:
        return pa.array([value] * n, pa.string())

    service_provider = by_provider(lambda p: PROVIDERS.get(p, (p,) * 3)[0])
    # the general calculation's rows: one unit at the row's cost (see the module docstring)
    general = pc.equal(usage["meter"], "usage")
    per_call = pc.is_in(usage["meter"], value_set=pa.array(list(FEE_METERS.values()), pa.string()))
    one = pa.scalar(Decimal(1), MONEY)
    sku = pc.binary_join_element_wise(provider, usage["model_id"], "/")
    meter = usage["meter"]
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "BilledCost": usage["meter_effective_cost"],
        "BillingAccountId": by_provider(lambda p: billing_accounts.get(p) or billing_accounts.get("*")
                                        or UNASSIGNED + p),
        "BillingAccountName": service_provider,
        "BillingCurrency": const("USD"),
        "BillingPeriodEnd": usage["month_end"], "BillingPeriodStart": usage["month_start"],
        "ChargeCategory": const("Usage"),
        "ChargeClass": pa.nulls(n, pa.string()),
        "ChargeDescription": pc.binary_join_element_wise(usage["model_id"], meter,
                                                         pc.if_else(per_call, "calls", "tokens"), " "),
        "ChargePeriodEnd": usage["period_end"], "ChargePeriodStart": usage["period_start"],
        "ContractedCost": usage["meter_effective_cost"],
        "EffectiveCost": usage["meter_effective_cost"],
        "HostProviderName": by_provider(lambda p: PROVIDERS.get(p, (p,) * 3)[1]),
        "InvoiceIssuerName": service_provider,
        "ListCost": usage["meter_list_cost"],
        "PricingQuantity": pc.if_else(general, one, pc.if_else(per_call, pc.cast(usage["tokens"], MONEY),
                                                               pc.cast(usage["pricing_quantity"], MONEY))),
        "PricingUnit": pc.if_else(general, "Units", pc.if_else(per_call, "Calls", "1000000 Tokens")),
        "ServiceCategory": const("AI and Machine Learning"),
        "ServiceName": by_provider(lambda p: PROVIDERS.get(p, (p,) * 3)[2]),
        "ServiceProviderName": service_provider,
        "ChargeFrequency": const("Usage-Based"),
        "ConsumedQuantity": usage["tokens"],
        "ConsumedUnit": pc.if_else(per_call, "Calls", "Tokens"),
        "ContractedUnitPrice": pc.if_else(general, usage["meter_effective_cost"], usage["unit_price"]),
        "ListUnitPrice": pc.if_else(general, usage["meter_list_cost"], usage["list_unit_price"]),
        "PricingCategory": const("Standard"),
        "PricingCurrency": const("USD"),
        "ServiceSubcategory": const("Generative AI"),
        "SkuId": sku, "SkuMeter": meter,
        "SkuPriceId": pc.binary_join_element_wise(sku, meter, usage["price_source"], "/"),
        "Tags": usage["tags_json"],
        "x_Team": usage["team"], "x_Feature": usage["feature"], "x_Customer": usage["customer"],
        "x_Environment": usage["environment"], "x_Model": usage["model_id"], "x_Mode": usage["mode"],
        "x_ServiceTier": usage["tier"], "x_PriceSource": usage["price_source"],
    }
    types = {"BilledCost": MONEY, "ContractedCost": MONEY, "EffectiveCost": MONEY, "ListCost": MONEY,
             "ContractedUnitPrice": MONEY, "ListUnitPrice": MONEY, "PricingQuantity": MONEY,
             "ConsumedQuantity": TOKENS, **{name: pa.timestamp("ms", tz="UTC") for name in DATETIME_COLUMNS}}
    order = FOCUS_MANDATORY + FOCUS_CONDITIONAL + EXTENSION_COLUMNS
    return pa.table({name: pc.cast(columns[name], types.get(name, pa.string())) for name in order})
